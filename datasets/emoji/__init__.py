"""The emoji tile dataset: sprite sheets, labels, and the seeded pair / puzzle / tile generator.

Entry point: ``python -m datasets.emoji.generate --help``. Training side (the runtime never imports it).
"""
