"""Implementations of the attribution methods exported by :mod:`captum_ext.attr`."""
