"""clip_match.export"""
