"""eightbit.fixed"""
