"""OpenVLThinkerV2: templates, graders, G²RPO algorithms, model loading and the tiny embedded model."""

__version__ = "0.1.0"
