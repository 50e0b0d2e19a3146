"""eightbit.quant"""
