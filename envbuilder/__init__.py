"""envbuilder: turn an ML training project into a reproducible environment and run it.

Data flows one way: detect (HostInfo) -> inspect (ProjectSpec) -> resolve (Plan) -> render (text)
-> build (Image) -> run (Run). This module re-exports nothing heavy: importing envbuilder must stay
cheap so that `envbuilder --help` never loads Docker or torch.
"""

__version__ = "0.1.0"
