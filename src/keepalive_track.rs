//! Pure keepalive tracker (being written).
