"""clip_match.data"""
