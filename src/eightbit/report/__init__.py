"""eightbit.report"""
