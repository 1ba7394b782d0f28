"""Helpers shared by the attribution methods of :mod:`captum_ext.attr`."""
