//! Strict grammars for every OVSDB value that can reach a config file, a command line or a
//! netlink message. A value that does not match is rejected with a reason naming the key;
//! nothing is ever escaped into a config.
