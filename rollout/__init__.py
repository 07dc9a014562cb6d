"""Host tools that roll signed firmware updates out to sensor boards (flash.sh ota)."""
