"""The Pisell channel plugin: IS (inventory system) stock through the proposed Open API."""
