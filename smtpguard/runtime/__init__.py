"""Running the relay as a service: start, reload and stop, pre-flight checks, logs, systemd."""
