//! Network ops (sockets): added with the networking layer.
