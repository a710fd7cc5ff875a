"""Transports: the interface (base), in-process queues (inprocess), RabbitMQ (amqp)."""
