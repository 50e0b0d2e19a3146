"""eightbit.calibrate"""
