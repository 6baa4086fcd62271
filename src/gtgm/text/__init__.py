"""Generated text: captions for patch locations (``gtgm caption``) and their frozen embeddings
(``gtgm embed-text``)."""
