"""Records into answers: the aggregates and text summary (:mod:`.summary`), a
recorded run's data for renderers (:mod:`.rundata`, :mod:`.flame`, :mod:`.tracks`),
the JSON lines format both ways (:mod:`.fileformat`) and merging runs (:mod:`.merge`)."""
