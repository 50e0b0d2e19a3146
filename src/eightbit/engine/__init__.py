"""eightbit.engine"""
