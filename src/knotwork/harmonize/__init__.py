"""knotwork.harmonize"""
