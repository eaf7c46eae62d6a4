"""A small blog service on underlay: users and their posts."""
