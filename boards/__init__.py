"""Board templates shipped with virsim (installed as the package virsim.board_templates)."""
