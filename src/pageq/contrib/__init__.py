"""Framework integrations: `pageq.contrib.django`, `pageq.contrib.sqlalchemy`, `pageq.contrib.fastapi`
(docs/integrations/). Each imports its framework, installed with the extra of the same name."""
