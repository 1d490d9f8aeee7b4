"""The API watching itself: every answer written to the prediction log (``recorder``) and
scored by the shadow version (``shadow``), off the answer path (``observe``)."""
