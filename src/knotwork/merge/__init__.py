"""knotwork.merge"""
