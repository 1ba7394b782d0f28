"""Attribution axioms as executable checks (see :mod:`captum_ext.metrics.axioms`)."""
