"""MoMoK's neural modules: adapters, experts, fusion, Tucker heads, CLUB, the interaction."""
