"""What both updown charms share: the relation schema between them, the status error their state builders raise,
config loading, atomic file writes and validated value types. Carried by both packed charms in lib/ (each charm's
pack.sh copies it there); the charms' src/ modules import it as `updown_charms`."""
