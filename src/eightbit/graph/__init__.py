"""eightbit.graph"""
