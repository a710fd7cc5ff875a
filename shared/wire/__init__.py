"""Wire format: message dataclasses (messages), msgpack serde and signatures (serde)."""
