"""eightbit.codegen"""
