"""Human-readable reports built from measured results (never typed by hand)."""
