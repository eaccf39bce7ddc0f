"""Text handling without torch: the CN-CLIP WordPiece tokenizer and text normalisation."""
