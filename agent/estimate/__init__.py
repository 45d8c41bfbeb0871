"""Pure estimation: no I/O, no clock, no event loop (an import-linter contract).

``estimator.MigrationEstimator`` turns a running job's samples into an ``Estimate`` (its
state in ``livetrack``, the guest's facts in ``livemodel``, each phase's estimate in
``livephase``);
``prediction.predict_migration`` predicts one before it starts with the same pass model
(``passmodel``), dirty-rate fit (``dirtyfit``), band (``etaband``) and verdict and remedies
(``advice``); ``steady`` keeps the shown verdict from flapping, ``drift`` widens the band of
a receding ETA. ``etaconfig`` holds the tunables, ``overhead`` learns QEMU's share of rss.
"""
