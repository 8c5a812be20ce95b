"""Process layer: configuration, wiring, signals and tracing setup."""
