"""eightbit.export"""
