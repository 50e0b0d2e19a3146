"""eightbit.ops"""
