"""knotwork.train"""
