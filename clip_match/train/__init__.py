"""clip_match.train"""
