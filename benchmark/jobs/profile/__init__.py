"""Measurements on top of the suite: where a study's time goes (:mod:`.study`), cells/s per Ray
worker count (:mod:`.engine`) and one method's episode time (:mod:`.model`)."""
