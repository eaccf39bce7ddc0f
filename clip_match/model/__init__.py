"""clip_match.model"""
