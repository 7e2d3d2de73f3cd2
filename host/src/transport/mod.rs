//! Transports: where messages come from and go to besides the inbox table. `amqp` consumes
//! RabbitMQ queues and publishes to exchanges.

pub mod amqp;
