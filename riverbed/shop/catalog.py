"""Reference data the demo shop is made of: places, categories with their trends, names.

The trends are what make the dashboards worth looking at: a category's monthly growth rate is
applied to its products' popularity month after month, so some categories visibly grow and some
decline; seller tiers fix return and refund behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

# country -> (region, cities). Codes are ISO 3166-1 alpha-2; anything else is "dirty".
COUNTRIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "US": ("North America", ("New York", "Chicago", "Austin", "Seattle", "Denver")),
    "CA": ("North America", ("Toronto", "Vancouver", "Montreal")),
    "MX": ("Latin America", ("Mexico City", "Guadalajara", "Monterrey")),
    "BR": ("Latin America", ("Sao Paulo", "Rio de Janeiro", "Curitiba")),
    "AR": ("Latin America", ("Buenos Aires", "Cordoba")),
    "GB": ("Europe", ("London", "Manchester", "Leeds")),
    "DE": ("Europe", ("Berlin", "Munich", "Hamburg")),
    "FR": ("Europe", ("Paris", "Lyon", "Marseille")),
    "ES": ("Europe", ("Madrid", "Barcelona", "Valencia")),
    "IT": ("Europe", ("Rome", "Milan", "Turin")),
    "NL": ("Europe", ("Amsterdam", "Rotterdam")),
    "PL": ("Europe", ("Warsaw", "Krakow")),
    "SE": ("Europe", ("Stockholm", "Gothenburg")),
    "IN": ("Asia Pacific", ("Mumbai", "Bengaluru", "Delhi")),
    "JP": ("Asia Pacific", ("Tokyo", "Osaka")),
    "KR": ("Asia Pacific", ("Seoul", "Busan")),
    "CN": ("Asia Pacific", ("Shanghai", "Shenzhen")),
    "SG": ("Asia Pacific", ("Singapore",)),
    "AU": ("Asia Pacific", ("Sydney", "Melbourne")),
    "ZA": ("Middle East & Africa", ("Johannesburg", "Cape Town")),
}
# How many customers each country has, relative; regions differ in size and basket.
COUNTRY_WEIGHT = {
    "US": 30,
    "CA": 6,
    "MX": 5,
    "BR": 7,
    "AR": 2,
    "GB": 8,
    "DE": 8,
    "FR": 6,
    "ES": 4,
    "IT": 4,
    "NL": 2,
    "PL": 2,
    "SE": 1.5,
    "IN": 6,
    "JP": 4,
    "KR": 2,
    "CN": 3,
    "SG": 1,
    "AU": 3,
    "ZA": 1.5,
}
REGION_BASKET = {
    "North America": 1.25,
    "Europe": 1.1,
    "Asia Pacific": 0.95,
    "Latin America": 0.75,
    "Middle East & Africa": 0.8,
}
BAD_COUNTRY_CODES = ("XX", "ZZ", "U.S.", "England", "??")


@dataclass(frozen=True)
class Category:
    name: str
    monthly_growth: float  # multiplicative growth of demand per month
    median_price: float
    nouns: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("smart_home", 0.10, 89.0, ("Smart Plug", "Hub", "Thermostat", "Doorbell", "Camera")),
    Category("fitness", 0.06, 45.0, ("Yoga Mat", "Kettlebell", "Resistance Band", "Foam Roller")),
    Category("pet_supplies", 0.05, 25.0, ("Cat Tree", "Dog Bed", "Leash", "Feeder", "Litter Box")),
    Category("beauty", 0.03, 22.0, ("Serum", "Face Cream", "Lip Balm", "Hair Oil")),
    Category(
        "kitchen", 0.015, 38.0, ("Chef Knife", "Skillet", "Blender", "Kettle", "Cutting Board")
    ),
    Category(
        "electronics", 0.01, 149.0, ("Headphones", "Charger", "Speaker", "Keyboard", "Monitor")
    ),
    Category("fashion", 0.0, 35.0, ("T-Shirt", "Jacket", "Sneakers", "Scarf", "Backpack")),
    Category("garden", 0.0, 30.0, ("Planter", "Hose", "Pruner", "Seed Kit")),
    Category("toys", -0.01, 28.0, ("Puzzle", "Board Game", "Building Set", "Plush")),
    Category("office", -0.03, 18.0, ("Notebook", "Desk Lamp", "Stapler", "Pen Set")),
    Category("books", -0.05, 15.0, ("Novel", "Cookbook", "Atlas", "Biography")),
    Category("dvds", -0.12, 12.0, ("Box Set", "Documentary", "Classic Film", "Concert")),
)

ADJECTIVES = (
    "Classic",
    "Premium",
    "Compact",
    "Deluxe",
    "Eco",
    "Ultra",
    "Essential",
    "Pro",
    "Mini",
    "Vintage",
    "Modern",
    "Rugged",
    "Soft",
    "Bright",
    "Quiet",
    "Swift",
)


@dataclass(frozen=True)
class SellerTier:
    name: str
    share: float  # fraction of sellers in this tier
    return_rate: float  # probability an item sold is returned
    refund_share: float  # of decided returns, the fraction refunded (others rejected)


SELLER_TIERS: tuple[SellerTier, ...] = (
    SellerTier("low", 0.35, 0.02, 0.55),
    SellerTier("medium", 0.50, 0.08, 0.75),
    SellerTier("high", 0.15, 0.24, 0.92),
)


@dataclass(frozen=True)
class CustomerSegment:
    name: str
    share: float
    frequency: float  # relative chance of placing any given order
    basket: float  # multiplies items per order


CUSTOMER_SEGMENTS: tuple[CustomerSegment, ...] = (
    CustomerSegment("occasional", 0.60, 1.0, 0.8),
    CustomerSegment("regular", 0.33, 3.5, 1.2),
    CustomerSegment("loyal", 0.07, 12.0, 2.2),
)

RETURN_REASONS = (
    "damaged",
    "defective",
    "wrong_item",
    "not_as_described",
    "changed_mind",
    "late_delivery",
    "too_small",
    "too_large",
)

FIRST_NAMES = (
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mia",
    "Lucas",
    "Sofia",
    "Mateo",
    "Yuki",
    "Hana",
    "Arjun",
    "Priya",
    "Chen",
    "Wei",
    "Fatima",
    "Omar",
    "Lena",
    "Jonas",
    "Elena",
    "Marco",
    "Chloe",
    "Hugo",
    "Ingrid",
    "Kofi",
    "Amara",
    "Diego",
    "Lucia",
    "Sven",
    "Aiko",
    "Min-jun",
    "Zara",
)
LAST_NAMES = (
    "Smith",
    "Garcia",
    "Muller",
    "Rossi",
    "Martin",
    "Silva",
    "Kim",
    "Tanaka",
    "Patel",
    "Nguyen",
    "Kowalski",
    "Johansson",
    "Dubois",
    "Lopez",
    "Schmidt",
    "Wang",
    "Singh",
    "Okafor",
    "Brown",
    "Costa",
    "Novak",
    "Jensen",
    "Haddad",
    "Ivanova",
    "Moreau",
    "Sato",
    "Fischer",
    "Reyes",
)
SELLER_WORDS = (
    "Atlas",
    "Harbor",
    "Summit",
    "Maple",
    "Nimbus",
    "Juniper",
    "Copper",
    "Lumen",
    "Orchid",
    "Granite",
    "Willow",
    "Beacon",
    "Cedar",
    "Falcon",
    "Meadow",
    "Pioneer",
)
SELLER_SUFFIXES = ("Goods", "Trading", "Supply", "Outlet", "Co", "Market", "Store", "Direct")
