"""knotwork.lora"""
