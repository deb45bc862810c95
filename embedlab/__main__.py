"""`python -m embedlab ...` (also what `torchrun -m embedlab` runs)."""
from .cli import main

main()
