"""``lerobot-fastwam memory``: what it plans (``plan``), how it traces on fake tensors (``trace``), how it prints
(``report``)."""
