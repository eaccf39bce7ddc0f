"""Tile puzzles: find the grid and cut its tiles (`tiles`), choose the matching ones (`select`),
solve (`solver.GridSolver`) and measure accuracy on a puzzles.jsonl (`evaluate`).

Runtime: torch-free.
"""
