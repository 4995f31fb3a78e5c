"""tinynet: a two-moons classifier small enough to train in seconds on a CPU, real enough to need torch."""
