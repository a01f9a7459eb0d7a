"""imagic: text-based editing of one real image with a diffusion model (Kawar et al. 2022)."""

__version__ = "0.1.0"
