"""`difflora demo`: the paper's comparison in miniature on a model the project makes itself."""
