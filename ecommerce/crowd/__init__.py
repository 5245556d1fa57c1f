"""The 12.12 crowd: thousands of buyers arriving within seconds for one hot
item, with the waiting room and without it (``flask crowd``; a row of ``make
bench``). Like the simulator and the drill, it stands beside the shop: nothing
of the shop imports it."""
