"""eightbit.analysis"""
