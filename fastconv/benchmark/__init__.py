"""The benchmark behind ``fastconv bench``: layer suites (:mod:`.suites`), the timed
implementations (:mod:`.impls`), the validate-then-time loop (:mod:`.runner`), the
machine peak (:mod:`.peak`) and the tables / JSON / CSV / plot (:mod:`.report`)."""
