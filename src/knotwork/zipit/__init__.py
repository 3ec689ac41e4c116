"""knotwork.zipit"""
