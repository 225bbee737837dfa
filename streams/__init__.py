"""Everything that moves bytes: codecs, transports, the local Kafka broker."""
