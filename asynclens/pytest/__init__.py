"""The pytest plugin (:mod:`.plugin`, the ``pytest11`` entry point): each test's
window on a session (:mod:`.window`, :mod:`.recorder`), the ``lens`` fixture
(:mod:`.lens`), budgets and allow rules (:mod:`.budgets`) and the suite summary
(:mod:`.suite_summary`). Only :mod:`.plugin` imports pytest, and nothing outside
this folder imports it."""
