"""Multi-modal datasets: a user's own folder, the MMKGC benchmarks and the built-in synthetic graph."""
